@security @card
Feature: Anomalies in the day's records
  The day's records flag what a merchant must look at: one card declined again and again, a
  burst of refunds, a transaction refused for a limit.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @SEC-03
  Scenario: Repeated declines on one card and a limit breach are flagged in the totals report
    Given the acquirer will decline the next 3 purchases with code 51
    When the cardholder tries to pay 5.00 by chip with the good card and its PIN 3 times
    Then each purchase is declined by the acquirer with code 51
    When the cardholder tries to pay more than the per-transaction limit with the good card
    And the operator prints the totals report
    Then the totals report flags repeated declines of the good card
    And the totals report flags the purchase refused for the limit
