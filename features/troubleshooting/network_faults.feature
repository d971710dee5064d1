@troubleshooting @network @card @fault
Feature: Network faults at the worst moment
  The in-line injector faults the network at a protocol moment no TCP-level tool can pick:
  only the acquirer's answer lost, latency inside and beyond the terminal's time-out, a request
  corrupted on its way, the connection reset as the answer comes. The wire proves each fault
  happened; the acquirer's ledger proves the cardholder is never charged for a sale the
  terminal did not complete.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-13
  Scenario: Only the acquirer's answer is lost; the terminal reverses the sale
    Given only the acquirer's next answer to a purchase will be lost on the network
    When the cardholder tries to pay 41.00 by chip with the good card and its PIN
    Then the purchase fails with a communication error
    And the acquirer answered the purchase but its answer never reached the terminal
    And the terminal keeps a reversal pending
    When the cardholder pays 42.00 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero

  @TS-12
  Scenario: Latency inside the terminal's time-out slows the sale but it is approved
    Given the network adds 1000 ms of latency
    When the cardholder pays 43.00 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer's answer reached the terminal at least 1000 ms after the request reached the acquirer

  @TS-12
  Scenario: Latency beyond the terminal's time-outs; nothing is sent and nothing charged
    Given the network adds 6000 ms of latency
    When the cardholder tries to pay 44.00 by chip with the good card and its PIN
    Then the purchase fails with a communication error
    And no purchase request reached the acquirer
    And the terminal owes no reversal
    When the network is fast again
    And the cardholder pays 45.00 by chip with the good card and its PIN
    Then the purchase is approved

  @TS-09
  Scenario: A request corrupted on its way is refused by the acquirer's MAC check
    Given the next purchase request will be corrupted on its way to the acquirer
    When the cardholder tries to pay 46.00 by chip with the good card and its PIN
    Then the purchase is declined by the acquirer with code A0
    And the request the acquirer received differs from the one the terminal sent
    When the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    When the cardholder pays 46.00 by chip with the good card and its PIN
    Then the purchase is approved

  @TS-13
  Scenario: The connection is reset as the answer comes; the terminal reverses the sale
    Given the connection will be reset as the acquirer answers the next purchase
    When the cardholder tries to pay 47.00 by chip with the good card and its PIN
    Then the purchase fails with a communication error
    And the terminal keeps a reversal pending
    When the cardholder pays 48.00 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero

  @TS-12
  Scenario: A slow link still carries the sale, each message paced at the link's rate
    Given the network slows to 9 kbit/s
    When the cardholder pays 47.50 by chip with the good card and its PIN
    Then the purchase is approved
    And the request took at least its length at 9 kbit/s to reach the acquirer
