@troubleshooting @network
Feature: Network dropped during sign-in
  When the network cable is pulled while the terminal signs in, the terminal shows a
  communication error; with the cable back, the sign-in succeeds.

  Background:
    Given the terminal is powered on and idle
    And the operator is logged in

  @fault @TS-02 @OP-04
  Scenario: Sign-in fails while the cable is pulled and succeeds once it is back
    When the network cable between the terminal and the acquirer is pulled
    And the operator signs the terminal in with the acquirer
    Then the sign-in fails with a communication error shown on the display
    And no sign-in request reached the acquirer
    When the network cable is plugged back in
    And the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    And the acquirer received the sign-in and approved it

  @fault @TS-02
  Scenario: The cable is pulled while the sign-in request is on its way
    Given the network cable will be pulled as the terminal sends its next request to the acquirer
    When the operator signs the terminal in with the acquirer
    Then the sign-in fails with a communication error shown on the display
    And the cable was pulled with the terminal's request on its way to the acquirer
    And no sign-in request reached the acquirer
    When the network cable is plugged back in
    And the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    And the acquirer received the sign-in and approved it

  @fault @TS-02
  Scenario: The terminal's network link goes down: the sign-in says so; with the link back it succeeds
    When the terminal's network link goes down
    And the operator signs the terminal in with the acquirer
    Then the sign-in fails saying the network link is down
    And the terminal put nothing on the wire while its link was down
    When the terminal's network link comes back
    And the operator signs the terminal in with the acquirer
    Then the sign-in succeeds
    And the acquirer received the sign-in and approved it
