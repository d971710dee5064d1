@operating @card
Feature: End of day: settlement and reconciliation
  At close of business the administrator settles the batch (日终处理). When the acquirer's
  totals differ, the terminal uploads each transaction and settles again; the batch closes and
  its number advances. A terminal with an unsettled batch must not be shut down or swapped.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-18
  Scenario: Settlement is balanced and the batch number advances
    Given the cardholder has paid 20.00 by chip with the good card and its PIN
    When the administrator settles the batch
    Then the settlement is balanced
    And the batch number has advanced
    And the acquirer received the settlement with the terminal's totals

  @OP-19
  Scenario: Unbalanced totals are reconciled by a batch upload
    Given the cardholder has paid 21.00 by chip with the good card and its PIN
    And the acquirer will disagree with the terminal's next settlement
    When the administrator settles the batch
    Then the settlement is balanced after uploading every transaction of the batch
    And the acquirer received the batch upload before the second settlement

  @OP-20
  Scenario: Shutting down with an unsettled batch is refused until it is settled
    Given the cardholder has paid 22.00 by chip with the good card and its PIN
    When the operator asks the terminal to shut down
    Then the terminal refuses because the batch is not settled
    When the administrator settles the batch
    And the operator asks the terminal to shut down
    Then the terminal agrees to shut down
