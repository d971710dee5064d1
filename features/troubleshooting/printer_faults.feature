@troubleshooting @printer @fault
Feature: The printer fails
  The relay unit is wired across the printer's paper sensor, its near-end sensor and its
  presence line. It takes the paper away in the middle of a receipt, makes the paper run low,
  or disconnects the printer; the power-on self-test reports each failing part with the fault
  code of the manual.

  @TS-11 @card
  Scenario: Paper runs out in the middle of the receipt; loading paper prints the rest
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer
    And the paper will run out as soon as the first copy of the next receipt is printed
    When the cardholder pays 12.00 by chip with the good card and its PIN
    Then the purchase is approved but its receipt is incomplete
    And the paper ran out between the merchant copy and the customer copy
    And the acquirer received exactly one purchase request
    When paper is loaded into the printer again
    Then the rest of the receipt is printed, marked as continued

  @TS-10 @card
  Scenario: Paper running low is a warning; the terminal still takes payments and prints
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer
    When the printer's paper runs low
    Then the terminal warns that the paper is running low
    When the cardholder pays 12.10 by chip with the good card and its PIN
    Then the purchase is approved
    And a customer receipt is printed showing the amount 12.10 and the card number masked

  @OP-01 @TS-17 @power
  Scenario Outline: The power-on self-test reports <part> with its fault code
    Given the terminal is powered on and idle
    And <condition>
    When the terminal is switched off and on again
    Then the self-test reports fault code <code>
    When the fault is put right
    And the terminal is switched off and on again
    Then the self-test reports no fault

    Examples:
      | part                   | condition                        | code |
      | a missing printer      | the printer is disconnected      | E01  |
      | a printer out of paper | the printer has no paper         | E02  |
      | a critical battery     | the supply is set to 6.42 V      | E12  |
