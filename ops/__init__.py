"""Operations: health checks for load balancers and Prometheus metrics."""
