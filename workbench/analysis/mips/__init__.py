"""MIPS (Michaud et al. 2024): RNN -> finite state machine -> Python program."""
