"""The contract shared by the write side, the projector and the API: typed messages and their codec."""
