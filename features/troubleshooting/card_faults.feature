@troubleshooting @card @fault
Feature: The chip fails between the card and the terminal
  The card bank's relay sits between the test card and the terminal's card slot. It makes the
  chip fail at a chosen moment, as a worn or dirty chip, a blocked card or a cardholder pulling
  the card out does. The card's own trace shows what the terminal was given, and the wire shows
  that nothing was charged.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-04
  Scenario Outline: A worn or dirty chip that <failure> is a card error and nothing reaches the acquirer
    Given the good card's chip <failure>
    When the cardholder tries to pay 8.10 by chip with the good card and its PIN
    Then the purchase is refused with a card error shown on the display
    And the card's trace shows the chip failing where the terminal met it
    And no purchase request reached the acquirer
    When the chip is healthy again
    And the cardholder pays 8.10 by chip with the good card and its PIN
    Then the purchase is approved

    Examples: a worn or dirty chip
      | failure                                   |
      | gives no answer                           |
      | returns damaged record data               |
      | answers every command two seconds late    |

  @TS-08
  Scenario Outline: A chip that <failure> is a card error and nothing reaches the acquirer
    Given the good card's chip <failure>
    When the cardholder tries to pay 8.10 by chip with the good card and its PIN
    Then the purchase is refused with a card error shown on the display
    And the card's trace shows the chip failing where the terminal met it
    And no purchase request reached the acquirer
    When the chip is healthy again
    And the cardholder pays 8.10 by chip with the good card and its PIN
    Then the purchase is approved

    Examples: the card pulled out early
      | failure                                                   |
      | is pulled out as the terminal asks it for its cryptogram  |
      | is pulled out while the terminal reads its second record  |

  @TS-05
  Scenario Outline: A card that <failure> is a card error and nothing reaches the acquirer
    Given the good card's chip <failure>
    When the cardholder tries to pay 8.10 by chip with the good card and its PIN
    Then the purchase is refused with a card error shown on the display
    And the card's trace shows the chip failing where the terminal met it
    And no purchase request reached the acquirer
    When the chip is healthy again
    And the cardholder pays 8.10 by chip with the good card and its PIN
    Then the purchase is approved

    Examples: a card that refuses
      | failure                               |
      | has its payment application blocked   |
      | refuses to give its cryptogram        |

  @TS-04
  Scenario: A slow chip still pays, and its trace shows every answer late
    Given the good card's chip answers every command 150 milliseconds late
    When the cardholder pays 8.20 by chip with the good card and its PIN
    Then the purchase is approved
    And the card's trace shows every answer at least 150 milliseconds after its command
