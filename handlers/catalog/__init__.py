"""The catalog: brands, SKUs, prices, guides, their history, and merchants' brands."""
