@operating @security
Feature: Operators, roles and lockout
  The terminal knows an administrator and numbered operators. A wrong password is refused;
  three in a row lock the operator until the administrator unlocks them. Only the administrator
  settles the batch or changes parameters.

  Background:
    Given the terminal is powered on and idle

  @OP-02 @SEC-02
  Scenario: Three wrong passwords lock the operator until the administrator unlocks them
    When the operator logs in with a wrong password 3 times
    Then each login is refused
    And the operator is locked even with the right password
    When the administrator logs in and unlocks the operator
    Then the operator can log in again

  @SEC-02
  Scenario: Only the administrator may settle the batch
    Given the operator is logged in
    When the operator tries to settle the batch
    Then the terminal refuses because the operator is not authorised
