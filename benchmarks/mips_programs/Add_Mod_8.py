def program(xs):
    """Add_Mod_8: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 8 states."""
    q = 0
    ys = []
    for x in xs:
        q = (7 & (q + x))
        ys.append(q)
    return ys
