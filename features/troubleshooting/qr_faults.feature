@troubleshooting @qr @fault @network
Feature: The network loses QR payment traffic
  The injector between the terminal and the QR payment platform reads only the request line of
  each HTTP request. It loses one kind of request, or the platform's answer to it, and lets the
  rest through. Its ledger shows what it dropped; the platform's own ledger shows what the
  platform received and booked.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-13 @OP-09 @card @qr_ledger
  Scenario: The answer to a payment-code charge is lost: the terminal revokes it before the next QR payment
    Given the network will lose the QR platform's answer to the next payment-code charge
    When the customer pays 13.10 by showing the alipay wallet's payment code to the terminal
    Then the QR payment fails with a communication error
    And the injector dropped 1 of them on the way, as it was told
    And the QR platform charged the customer although the terminal never heard its answer
    When the customer pays 13.20 by showing the wechat wallet's payment code to the terminal
    Then the QR payment is approved, paid by the wechat wallet
    And the QR platform booked that order paid for 13.20
    And the QR platform revoked the unheard payment and gave the money back

  @TS-13 @OP-08 @qr_ledger
  Scenario: Order requests never reach the platform: the terminal says so and nothing is booked
    Given the network will lose the terminal's order requests to the QR platform
    When the customer pays 13.30 by scanning the terminal's QR code with the wechat wallet
    Then the QR payment fails with a communication error
    And the injector dropped 1 of them on the way, as it was told
    And the QR platform received no order request and booked nothing
    When the network stops losing the QR platform's traffic
    And the customer pays 13.40 by scanning the terminal's QR code with the wechat wallet
    Then the QR payment is approved, paid by the wechat wallet
    And the QR platform booked that order paid for 13.40

  @TS-12 @OP-08 @qr_ledger
  Scenario: A lost answer to the terminal's poll is polled again until the order shows paid
    Given the network will lose the QR platform's answer to the terminal's next order query
    When the customer pays 13.50 by scanning the terminal's QR code with the unionpay wallet
    Then the QR payment is approved, paid by the unionpay wallet
    And the injector dropped 1 of them on the way, as it was told
    And the QR platform booked that order paid for 13.50
