@troubleshooting @card
Feature: Card failure
  A card whose chip does not answer is reported as a card error; the cardholder pays with
  another card.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @fault @TS-04
  Scenario: A mute chip is reported as a card error, and a good card then pays
    When the cardholder tries to pay 8.00 by chip with the mute card
    Then the purchase is refused with a card error shown on the display
    When the cardholder pays 8.00 by chip with the good card and its PIN
    Then the purchase is approved
