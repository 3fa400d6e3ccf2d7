def program(xs):
    """Base_4_Addition: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 8 states."""
    q = 0
    ys = []
    for x0, x1 in xs:
        q = (x0 + (x1 + (q // 4)))
        ys.append((q % 4))
    return ys
