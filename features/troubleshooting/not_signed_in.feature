@troubleshooting @card @power
Feature: Terminal not signed in
  After a restart the terminal has no working keys: it refuses transactions and asks the operator
  to sign in (签到) with the acquirer; once signed in, purchases go through.

  @TS-01
  Scenario: Purchases are refused until the terminal signs in
    Given the terminal has just been restarted
    And the operator is logged in
    When the cardholder tries to pay 5.00 by chip with the good card and its PIN
    Then the purchase is refused because the terminal is not signed in
    And the display asks the operator to sign in
    When the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    When the cardholder pays 5.00 by chip with the good card and its PIN
    Then the purchase is approved
