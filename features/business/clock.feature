@operating
Feature: Date and time come from the acquirer at sign-in
  The terminal keeps its own clock. A wrong clock is shown as it is and corrected at sign-in
  from the acquirer's reply.

  @OP-03
  Scenario: A wrong clock is corrected at sign-in
    Given the terminal is powered on and idle
    And the administrator has set the terminal's clock a day and an hour wrong
    When the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    And the terminal's clock agrees with the time the acquirer sent
