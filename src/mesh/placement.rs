//! Placement: which nodes can run an agent, from the imports its DNA needs.
