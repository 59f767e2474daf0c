"""The compliance monitor: versioned rules over ``ledger.events``, alerts, cases, backtest."""
