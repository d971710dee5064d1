@troubleshooting @power @fault
Feature: The terminal's power fails
  The bench supply stands in for the terminal's battery. It runs the battery flat, dips it for
  a few milliseconds, limits its current, cuts it at a chosen moment of a sale. What the supply
  measured shows the terminal met the fault; the terminal's events show what it did about it.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-15 @card
  Scenario: A battery running flat warns, refuses payments, shuts the terminal down, and it starts again once charged
    When the battery runs down to 6.60 V at 0.5 V per second
    Then the terminal warns that the battery is low
    When the cardholder tries to pay 6.10 by chip with the good card and its PIN
    Then the purchase is refused because the battery is low
    When the battery runs down further to 6.30 V at 0.25 V per second
    Then the terminal shuts itself down because its battery is empty
    And the supply measured the terminal drawing no current after it shut down
    When the battery is charged again
    Then the terminal starts again by itself

  @TS-18 @card
  Scenario: A brown-out dip hangs the terminal; switching it off and on brings it back
    When the supply dips to 6.10 V for 100 milliseconds
    Then the supply's trace shows the dip to 6.10 V and back
    And the terminal no longer answers
    When the terminal is switched off and on again
    Then the terminal starts again by itself
    When the operator logs in and signs the terminal in again
    And the cardholder pays 6.20 by chip with the good card and its PIN
    Then the purchase is approved

  @TS-18
  Scenario: A dip below brown-out restarts the terminal by itself
    When the supply dips to 4.50 V for 50 milliseconds
    Then the supply's trace shows the dip to 4.50 V and back
    And the terminal starts again by itself

  @TS-14
  Scenario: A current limit too low to boot: the terminal never starts until the limit is right
    Given the supply's current limit is lowered to 0.20 A
    When the terminal is switched off and on again
    Then the terminal does not start within its boot time
    And the supply measured the rail collapsing below the terminal's brown-out as it tried
    When the supply is set right again
    Then the terminal starts again by itself

  @TS-14
  Scenario: A supply voltage too low to power on: the terminal stays dark until it is right
    Given the supply is set to 5.50 V
    When the terminal is switched off and on again
    Then the terminal does not start within its boot time
    And the supply measured the rail below the terminal's brown-out and no current drawn
    When the supply is set right again
    Then the terminal starts again by itself

  @TS-16 @card
  Scenario: Power lost as the card computes its cryptogram: nothing is charged, nothing journaled
    Given the power will be cut as the terminal asks the card for its cryptogram
    When the cardholder starts paying 9.00 by chip with the good card
    Then the supply switched off right after the terminal's cryptogram request to the card
    When the power comes back and the terminal restarts
    Then the terminal's journal has no record of that sale
    And no purchase request reached the acquirer

  @TS-16 @TS-13 @card
  Scenario: Power lost as the purchase request crosses to the acquirer: after the restart the sale is reversed
    Given the acquirer will hold its answer to the next purchase for 2 seconds
    And the power will be cut as the purchase request crosses to the acquirer
    When the cardholder starts paying 9.30 by chip with the good card
    Then the supply switched off after the purchase request had crossed to the acquirer
    When the power comes back and the terminal restarts
    Then the terminal owes a reversal of that sale
    When the operator signs the terminal in with the acquirer
    And the cardholder pays 9.40 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero
