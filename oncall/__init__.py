"""Who is on call: teams, surgeons, shifts, and the pure lookup over them."""
