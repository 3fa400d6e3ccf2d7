def program(xs):
    """Parity_All: synthesised by MIPS from a trained RNN (fsm(kmeans)+search). 2 states."""
    q = 0
    ys = []
    for x in xs:
        q = (q ^ x)
        ys.append(q)
    return ys
