@troubleshooting @printer @card
Feature: Printer out of paper
  The terminal notices when its printer runs out of paper and will not take a payment it cannot
  print a receipt for; once paper is loaded the receipt prints.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @fault @TS-10
  Scenario: Paper out is reported; after reloading paper the receipt prints
    When the printer runs out of paper
    Then the terminal reports that the printer is out of paper
    When the cardholder tries to pay 3.00 by chip with the good card and its PIN
    Then the purchase is refused because the printer is out of paper
    When paper is loaded into the printer
    Then the terminal reports that paper is present
    When the cardholder pays 3.00 by chip with the good card and its PIN
    Then the purchase is approved
    And a customer receipt is printed showing the amount 3.00 and the card number masked
