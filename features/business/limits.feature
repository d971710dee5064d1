@operating @security @card
Feature: Transaction limits
  The terminal refuses, before going online, a sale above its per-transaction limit or one that
  would take the day's sales above the daily limit; the acquirer never sees it.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-10
  Scenario: A sale above the per-transaction limit is refused before going online
    When the cardholder tries to pay more than the per-transaction limit with the good card
    Then the purchase is refused because it is above the per-transaction limit
    And no purchase request reached the acquirer

  @SEC-04
  Scenario: The sale that would exceed the daily limit is refused
    Given the daily limit is set just above a purchase of 50.00
    When the cardholder pays 50.00 by chip with the good card and its PIN
    Then the purchase is approved
    When the cardholder tries to pay 20.00 by chip with the good card and its PIN
    Then the purchase is refused because it is above the daily limit
    And the acquirer received exactly one purchase request
