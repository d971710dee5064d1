@operating @card @ledger
Feature: Purchase by chip with online PIN
  A merchant's operator takes a card payment: the cardholder inserts the chip card, enters the
  PIN on the terminal's PIN pad, the acquirer approves online, and the terminal prints receipts
  that show only the masked card number.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05
  Scenario: Chip purchase with online PIN is approved, printed and booked by the acquirer
    When the cardholder pays 12.34 by chip with the good card and its PIN
    Then the purchase is approved
    And a customer receipt is printed showing the amount 12.34 and the card number masked
    And the acquirer's ledger shows the approved purchase of 12.34
