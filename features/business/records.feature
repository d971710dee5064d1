@operating @card
Feature: Receipts, reprint, query and totals
  Every financial transaction prints a merchant and a customer copy; the last receipt can be
  reprinted, marked as such; a transaction can be looked up by its trace number; the totals
  report matches what the acquirer booked.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-12
  Scenario: Both copies carry the type, the masked card, amount, reference, batch and trace
    When the cardholder pays 12.00 by chip with the good card and its PIN
    Then the purchase is approved
    And both copies of the receipt show the sale with its reference, batch and trace numbers

  @OP-15
  Scenario: The last receipt is reprinted and marked as a reprint
    Given the cardholder has paid 9.00 by chip with the good card and its PIN
    When the operator reprints the last receipt
    Then the reprinted receipt is the same sale and is marked as a reprint

  @OP-16
  Scenario: A transaction looked up by its trace number matches what the acquirer booked
    Given the cardholder has paid 7.00 by chip with the good card and its PIN
    When the operator looks up that purchase by its trace number
    Then the record shows the approved sale of 7.00 as the acquirer booked it

  @OP-17
  Scenario: The totals report equals the acquirer's ledger for the batch
    Given the cardholder has paid 11.00 by chip with the good card and its PIN
    When the operator prints the totals report
    Then the totals by type equal what the acquirer booked for this batch
