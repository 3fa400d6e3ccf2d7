def program(xs):
    """Parity_Zeros: synthesised by MIPS from a trained RNN (fsm(behaviour3)+search). 2 states."""
    q = 0
    ys = []
    for x in xs:
        q = int(q == x)
        ys.append(q)
    return ys
