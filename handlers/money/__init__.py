"""Money: payments through Stripe, payouts through Connect, the durable scheduler of money calls."""
