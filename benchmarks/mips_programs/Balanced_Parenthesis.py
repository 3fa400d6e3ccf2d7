def program(xs):
    """Balanced_Parenthesis: synthesised by MIPS from a trained RNN (fsm(behaviour3)+search/table). 5 states."""
    DELTA = {(0, 0): 1, (0, 1): 2, (1, 0): 3, (1, 1): 0, (2, 0): 2, (2, 1): 2, (3, 0): 4, (3, 1): 1, (4, 0): 2, (4, 1): 3}
    q = 0
    ys = []
    for x in xs:
        q = DELTA[(q, x)]
        ys.append(int(0 == q))
    return ys
