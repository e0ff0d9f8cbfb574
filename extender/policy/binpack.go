package policy

func init() {
	register(&Policy{
		Name: Binpack,
		// Best fit: the card left with the least free memory.
		CardCost: func(rt *Rating, i int, share int64) float64 {
			return float64(rt.Node.Cards[i].Free() - share)
		},
		// The node left with the least free memory.
		NodeScore: func(_ *Rating, after *Node) float64 {
			return -float64(after.Free())
		},
	})
	register(&Policy{
		Name: Spread,
		// The card left with the most free memory.
		CardCost: func(rt *Rating, i int, share int64) float64 {
			return -float64(rt.Node.Cards[i].Free() - share)
		},
		// The node left with the largest free fraction.
		NodeScore: func(_ *Rating, after *Node) float64 {
			t := after.Total()
			if t == 0 {
				return 0
			}
			return float64(after.Free()) / float64(t)
		},
	})
}
