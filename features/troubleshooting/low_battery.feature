@troubleshooting @power @card
Feature: Low battery
  A terminal whose battery is at the low-battery threshold warns and refuses to start a
  transaction; charged again, it takes payments.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @fault @TS-15
  Scenario: Low battery warns and refuses purchases; a charged battery pays again
    When the battery sags to the low-battery threshold
    Then the terminal warns that the battery is low
    When the cardholder tries to pay 6.00 by chip with the good card and its PIN
    Then the purchase is refused because the battery is low
    When the battery is back at its nominal voltage
    Then the terminal no longer warns about the battery
    When the cardholder pays 6.00 by chip with the good card and its PIN
    Then the purchase is approved
