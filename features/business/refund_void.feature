@operating @card
Feature: Refunds and voids against the original
  A refund names the original sale by its reference and may return all or part of it, never
  more than is left; a void cancels a sale of the open batch and is refused once the batch is
  settled. The acquirer's ledger proves what was booked.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-13 @OP-12
  Scenario: A partial refund, then the rest, then nothing more
    Given the cardholder has paid 100.00 by chip with the good card and its PIN
    When the operator refunds 40.00 of that purchase
    Then the refund is approved
    And both copies of the refund receipt show the refund with its reference, batch and trace numbers
    And the acquirer booked a refund of 40.00 against that purchase
    When the operator refunds 60.00 of that purchase
    Then the refund is approved
    When the operator refunds 0.01 of that purchase
    Then the refund is declined by the acquirer with code 61

  @OP-13
  Scenario: A refund above the original is refused
    Given the cardholder has paid 30.00 by chip with the good card and its PIN
    When the operator refunds 30.01 of that purchase
    Then the refund is declined by the acquirer with code 61
    And the acquirer booked no refund against that purchase

  @OP-14
  Scenario: A sale of the open batch is voided and the acquirer nets it
    Given the cardholder has paid 25.00 by chip with the good card and its PIN
    When the operator voids that purchase
    Then the void is approved
    And the acquirer's ledger shows that purchase voided

  @OP-14 @OP-18
  Scenario: A void after settlement is refused
    Given the cardholder has paid 15.00 by chip with the good card and its PIN
    And the administrator has settled the batch
    When the operator voids that purchase
    Then the void is refused
