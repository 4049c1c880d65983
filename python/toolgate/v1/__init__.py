"""Generated code for the toolgate.v1 protobuf API (scripts/gen_proto; do not edit)."""
