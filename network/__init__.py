"""The network around the hotline: partner hospitals, referrals, callbacks, major incidents."""
