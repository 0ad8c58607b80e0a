//! riffle Kafka sink
