@troubleshooting @card @fault
Feature: The stripe cannot be read
  The card bank plays a card's stripe to the terminal's reader head. It spoils a swipe the way a
  dirty or worn stripe, or a swipe too fast, does: each track's check character (LRC) wrong, or
  track 2 cut short after the card number. The card bank's own record says which swipes it
  spoiled; the wire shows what reached the acquirer.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in
    And the terminal is signed in with the acquirer

  @TS-04 @OP-06
  Scenario: A dirty stripe read badly twice is swiped again and pays
    Given the stripe reader misreads the next 2 swipes
    When the cardholder pays 12.10 by stripe with the magstripe card
    Then the card bank spoiled 2 swipes and the terminal met each one
    And the purchase is approved, read by stripe and verified by signature
    And the acquirer received exactly one purchase request
    And the acquirer received it as read by stripe with signature

  @TS-04
  Scenario: A worn stripe that never reads: the terminal gives up and nothing is charged
    Given no swipe can be read: the stripe is worn out
    When the cardholder pays 12.20 by stripe with the magstripe card
    Then the purchase is refused because the stripe could not be read
    And the card bank spoiled 3 swipes and the terminal met each one
    And no purchase request reached the acquirer

  @TS-04
  Scenario: Fallback from a failing chip survives a swipe too fast
    Given the next swipe is too fast for the reader
    When the cardholder pays 12.30 by chip with the mute card whose chip fails, then swipes it when the terminal asks
    Then the card bank spoiled 1 swipes and the terminal met each one
    And the acquirer received it as a fallback from chip to stripe
