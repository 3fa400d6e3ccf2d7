def program(xs):
    """Min_Seen: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 10 states."""
    q = 9
    ys = []
    for x in xs:
        q = min(q, x)
        ys.append(q)
    return ys
