@troubleshooting @card
Feature: A lost response is reversed
  When the acquirer's answer to a sale never arrives, the terminal does not know whether the
  cardholder was charged: it keeps a reversal and sends it before its next financial message,
  and the acquirer nets the sale to zero.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-09 @TS-13
  Scenario: The response to a sale is lost; the reversal goes out with the next sale
    Given the acquirer will not answer the next purchase
    When the cardholder tries to pay 33.00 by chip with the good card and its PIN
    Then the purchase fails with a communication error
    And the terminal keeps a reversal pending
    When the cardholder pays 34.00 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero

  @TS-08 @TS-09
  Scenario: The card is pulled before it takes the approval; the approval is reversed
    Given the acquirer will hold its answer to the next purchase for 2 seconds
    When the cardholder pulls the card out while the terminal waits for the answer to a purchase of 36.00
    Then the purchase fails with a card error saying the approval will be reversed
    And the terminal keeps a reversal pending
    When the cardholder pays 37.00 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero
