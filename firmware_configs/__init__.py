"""Device profiles: one TOML file per supported board, read by edge_verify.edge.profiles."""
