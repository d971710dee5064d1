@troubleshooting @card @fault
Feature: Wrong PIN
  The cardholder types a wrong PIN. The issuer checks the encrypted PIN block and declines; the
  right PIN then pays; three wrong PINs in a row block the card's PIN, even for the right one.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-07
  Scenario: A wrong PIN is declined by the issuer and the right PIN then pays
    When the cardholder tries to pay 7.00 by chip with the good card and a wrong PIN
    Then the purchase is declined by the acquirer with code 55
    When the cardholder pays 7.00 by chip with the good card and its PIN
    Then the purchase is approved

  @TS-07
  Scenario: Three wrong PINs in a row block the card's PIN
    When the cardholder tries 3 times to pay 7.10 by chip with the good card and a wrong PIN
    Then the acquirer answered the attempts with codes 55, 55 and 75
    And every attempt carried an encrypted PIN block to the acquirer
    When the cardholder tries to pay 7.10 by chip with the good card and its PIN
    Then the purchase is declined by the acquirer with code 75
