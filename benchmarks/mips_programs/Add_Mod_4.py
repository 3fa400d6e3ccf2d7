def program(xs):
    """Add_Mod_4: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 4 states."""
    q = 0
    ys = []
    for x in xs:
        q = (3 & (q + x))
        ys.append(q)
    return ys
