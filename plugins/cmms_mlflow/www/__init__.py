"""The api-server side: the model API's routes, the predict route, the Models page, and the read
models and warm champions behind them."""
