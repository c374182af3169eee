"""Deploy and roll back: lock, ship, link, switch, check, and go back when it is bad."""
