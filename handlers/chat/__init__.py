"""Order chat rooms and the pushes that reach offline devices."""
