def program(xs):
    """Add_Mod_7: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 7 states."""
    q = 0
    ys = []
    for x in xs:
        q = ((q + x) % 7)
        ys.append(q)
    return ys
