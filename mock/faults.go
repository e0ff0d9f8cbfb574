package mock

import "fmt"

func (s *State) card(i int) (*CardState, error) {
	if i < 0 || i >= len(s.Cards) {
		return nil, fmt.Errorf("no card %d: the simulated node has %d", i, len(s.Cards))
	}
	return &s.Cards[i], nil
}

func (s *State) event(e Event) {
	s.Seq++
	e.Seq = s.Seq
	s.Events = append(s.Events, e)
	if len(s.Events) > 256 { // nobody reads faults that old
		s.Events = s.Events[len(s.Events)-256:]
	}
}

// InjectXid raises a critical Xid error on a card.
func (st *Store) InjectXid(card int, xid uint64) error {
	return st.Update(func(s *State) error {
		if _, err := s.card(card); err != nil {
			return err
		}
		s.event(Event{Card: card, Xid: xid})
		return nil
	})
}

// InjectECC raises a double-bit ECC error on a card.
func (st *Store) InjectECC(card int) error {
	return st.Update(func(s *State) error {
		if _, err := s.card(card); err != nil {
			return err
		}
		s.event(Event{Card: card, DoubleBitECC: true})
		return nil
	})
}

// Lose makes a card fall off the bus (or, lost false, come back).
func (st *Store) Lose(card int, lost bool) error {
	return st.Update(func(s *State) error {
		c, err := s.card(card)
		if err != nil {
			return err
		}
		c.Lost = lost
		return nil
	})
}

// SetProcess adds a process to a card, or replaces the record of the same
// PID in the same PID namespace (so two containers' PID 1 are two
// processes).
func (st *Store) SetProcess(card int, p Process) error {
	return st.Update(func(s *State) error {
		c, err := s.card(card)
		if err != nil {
			return err
		}
		for i := range c.Processes {
			if c.Processes[i].sameProcess(p) {
				c.Processes[i] = p
				return nil
			}
		}
		c.Processes = append(c.Processes, p)
		return nil
	})
}

// RemoveProcess removes a process (its PID in its PID namespace; the start
// time is not compared) from every card.
func (st *Store) RemoveProcess(id Identity) error {
	gone := Process{PIDNamespace: id.PIDNamespace, PID: id.PID}
	return st.Update(func(s *State) error {
		for ci := range s.Cards {
			ps := s.Cards[ci].Processes[:0]
			for _, p := range s.Cards[ci].Processes {
				if !p.sameProcess(gone) {
					ps = append(ps, p)
				}
			}
			s.Cards[ci].Processes = ps
		}
		return nil
	})
}
