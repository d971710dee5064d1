@operating @qr
Feature: Paying by QR code
  The terminal shows the order's code and the customer's wallet scans and pays it, or the
  terminal scans the payment code the customer's wallet shows; a wallet may ask its owner for
  the password first while the terminal waits. The QR payment platform's ledger shows the order
  paid.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-08 @qr_ledger
  Scenario: The customer scans the terminal's code and pays
    When the customer pays 12.30 by scanning the terminal's QR code with the wechat wallet
    Then the QR payment is approved, paid by the wechat wallet
    And the QR platform booked that order paid for 12.30

  @OP-09 @card @qr_ledger
  Scenario: The terminal scans the customer's payment code
    When the customer pays 12.40 by showing the alipay wallet's payment code to the terminal
    Then the QR payment is approved, paid by the alipay wallet
    And the QR platform booked that order paid for 12.40

  @OP-09 @card @qr_ledger
  Scenario: A payment code that needs the wallet password: the terminal waits until it is typed
    When the customer pays 12.50 by showing the unionpay wallet's payment code, typing the wallet password when asked
    Then the QR payment is approved, paid by the unionpay wallet
    And the QR platform booked that order paid for 12.50
