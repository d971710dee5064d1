@troubleshooting @card @power
Feature: Power lost in the middle of a sale
  The terminal journals every step before acting on it. Whatever instant the power goes, after
  the restart it completes what it started: a sale whose answer never came is reversed, an
  approved sale whose receipt was not printed is printed; the cardholder is never charged twice.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @fault @TS-16 @OP-21
  Scenario Outline: Power cut <stage>
    When the power is cut <stage> of a sale of 44.00 with the good card
    And the power comes back and the terminal restarts
    Then the terminal's journal still holds that sale
    And after signing in again and one more sale the acquirer has charged the card at most once
    And the sale is either booked once with its receipt printed or reversed

    Examples:
      | stage                          |
      | before the request leaves      |
      | after the request left         |
      | after the approval arrived     |
      | while the receipt is printing  |
