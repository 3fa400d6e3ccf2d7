def program(xs):
    """Bit_Dot_Prod_Mod2: synthesised by MIPS from a trained RNN (fsm(kmeans)+search). 2 states."""
    q = 0
    ys = []
    for x0, x1 in xs:
        q = (q ^ (x0 * x1))
        ys.append(q)
    return ys
