@troubleshooting @card @fault
Feature: Cards the issuer or the card itself refuses
  Each card of the bank fails in its own documented way: expired, short of funds, its PIN tries
  used up, counterfeit, restricted, its issuer unreachable or failing, its application blocked,
  its answer to reset garbled, its cryptogram refused after the issuer approved. What the
  acquirer answered on the wire and what it booked show the refusal; nothing is charged.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-05 @wire @ledger
  Scenario Outline: The issuer declines the <card> card with code <code>
    When the cardholder tries to pay 14.00 by chip with the <card> card and its PIN
    Then the purchase is declined by the acquirer with code <code>
    And the acquirer charged nothing for it

    Examples: expired, counterfeit or restricted
      | card        | code |
      | expired     | 54   |
      | counterfeit | 05   |
      | restricted  | 62   |

  @TS-06 @wire @ledger
  Scenario Outline: The issuer declines a card short of funds with code <code>
    When the cardholder tries to pay 14.00 by chip with the <card> card and its PIN
    Then the purchase is declined by the acquirer with code <code>
    And the acquirer charged nothing for it

    Examples: short of funds
      | card               | code |
      | insufficient_funds | 51   |

  @TS-07 @wire @ledger
  Scenario Outline: The issuer declines a card whose PIN tries are used up with code <code>
    When the cardholder tries to pay 14.00 by chip with the <card> card and its PIN
    Then the purchase is declined by the acquirer with code <code>
    And the acquirer charged nothing for it

    Examples: PIN tries used up
      | card          | code |
      | pin_exhausted | 75   |

  @TS-09 @wire @ledger
  Scenario Outline: The issuer is unreachable or failing: the <card> card is declined with code <code>
    When the cardholder tries to pay 14.00 by chip with the <card> card and its PIN
    Then the purchase is declined by the acquirer with code <code>
    And the acquirer charged nothing for it

    Examples: the issuer unreachable or failing
      | card               | code |
      | issuer_unavailable | 91   |
      | issuer_malfunction | 96   |

  @TS-05 @wire
  Scenario Outline: The card's payment application is blocked: the <card> card is refused
    When the cardholder tries to pay 14.10 by chip with the <card> card and its PIN
    Then the purchase is refused with a card error shown on the display
    And no purchase request reached the acquirer

    Examples: blocked application
      | card    |
      | blocked |

  @TS-04 @wire
  Scenario Outline: The card's answer to reset is garbled: the <card> card is refused
    When the cardholder tries to pay 14.10 by chip with the <card> card and its PIN
    Then the purchase is refused with a card error shown on the display
    And no purchase request reached the acquirer

    Examples: garbled answer to reset
      | card        |
      | garbage_atr |

  @TS-08 @wire @ledger
  Scenario: The card refuses the issuer's approval: the terminal declines and reverses it
    When the cardholder tries to pay 14.20 by chip with the decline_after_approval card and its PIN
    Then the purchase is declined by the card after the acquirer approved it
    And the terminal keeps a reversal pending
    When the cardholder pays 14.30 by chip with the good card and its PIN
    Then the purchase is approved
    And the acquirer received the reversal before the next purchase
    And the acquirer's ledger nets the lost purchase to zero
