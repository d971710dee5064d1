@operating @card
Feature: Every way to pay by card
  The cardholder inserts the chip, swipes the stripe or taps the card, and is verified by an
  online PIN, an offline PIN the card checks itself, a signature, or not at all under the
  contactless limit. The request on the wire says how the card was read and carries a PIN block
  only when the issuer checks the PIN; the card's trace shows what the card was asked.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @OP-05 @wire
  Scenario Outline: A chip card verified by an online PIN: the <card> card
    When the cardholder pays <amount> by <entry> with the <card> card
    Then the purchase is approved, read by <entry> and verified by <cvm>
    And the acquirer received it as read by <entry> with <cvm>

    Examples: chip, online PIN
      | card          | entry | amount | cvm        |
      | good          | chip  | 10.10  | online PIN |
      | credit        | chip  | 10.20  | online PIN |
      | international | chip  | 10.30  | online PIN |

  @OP-05 @OP-11 @wire
  Scenario Outline: A chip card that checks the PIN itself: the <card> card
    When the cardholder pays <amount> by <entry> with the <card> card
    Then the purchase is approved, read by <entry> and verified by <cvm>
    And the acquirer received it as read by <entry> with <cvm>

    Examples: chip, the PIN checked by the card
      | card        | entry | amount | cvm         |
      | offline_pin | chip  | 10.40  | offline PIN |

  @OP-06 @OP-11 @wire
  Scenario Outline: A swiped card signed for on the pad: the <card> card
    When the cardholder pays <amount> by <entry> with the <card> card
    Then the purchase is approved, read by <entry> and verified by <cvm>
    And the acquirer received it as read by <entry> with <cvm>

    Examples: stripe, signed on the pad
      | card      | entry  | amount | cvm       |
      | magstripe | stripe | 10.90  | signature |

  @OP-07 @wire
  Scenario Outline: A tap of <amount>, verified by <cvm>
    When the cardholder pays <amount> by <entry> with the <card> card
    Then the purchase is approved, read by <entry> and verified by <cvm>
    And the acquirer received it as read by <entry> with <cvm>

    Examples: tap, under and over the contactless CVM limit
      | card        | entry | amount  | cvm             |
      | contactless | tap   | 10.50   | no verification |
      | contactless | tap   | 1500.00 | online PIN      |

  @OP-07
  Scenario: Two cards in the field: the terminal asks for one, then pays
    When the cardholder pays 10.60 by tap with the contactless card while another card is in the field
    Then the terminal asked for one card only before it read the card
    And the purchase is approved, read by tap and verified by no verification

  @OP-06
  Scenario: A chip card swiped is asked for its chip, and pays by chip
    When the cardholder pays 10.70 by stripe with the good card
    Then the terminal asked for the chip instead of the stripe
    And the purchase is approved, read by chip and verified by online PIN

  @OP-06 @OP-11
  Scenario: A stripe card signs on the pad and the receipt says so
    When the cardholder pays 11.10 by stripe with the magstripe card
    Then the purchase is approved, read by stripe and verified by signature
    And the receipt says the signature was captured

  @TS-04 @wire
  Scenario: A chip that keeps failing falls back to the stripe, and the acquirer is told
    When the cardholder pays 11.20 by chip with the mute card whose chip fails, then swipes it when the terminal asks
    Then the acquirer received it as a fallback from chip to stripe

  @OP-11 @TS-07
  Scenario: A wrong PIN checked by the card: it says how many tries are left; the right PIN pays
    When the cardholder pays 10.80 by chip with the offline_pin card, typing a wrong PIN first
    Then the card checked the PIN itself, refusing the wrong one first
    And the purchase is approved, read by chip and verified by offline PIN
