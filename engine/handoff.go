package engine

import (
	"sync"
	"sync/atomic"
)

// A handoff is how the tail poll gives a partition actor the records it
// fetched for it. At steady load the tail fetches for every waiting actor
// in one statement (tail.poll) instead of each actor fetching on its own
// after a wake-up; an actor that is busy (fetching, publishing, completing)
// is never fetched for, so a record is never in two batches of one
// instance at once.
//
// The right to fetch a partition passes between its actor and the tail
// through state, one word: a generation number and an idle bit. The actor
// sets idle (and a new generation) when it starts to wait, after its last
// batch's completion committed; from then on the tail may claim it. The
// tail reads the word before its statement and claims the partition after
// it with a compare-and-swap from that same word to busy: it fails if the
// actor woke up meanwhile (and took the right back by its own swap), even
// if the actor has gone idle again since (a new generation), since the
// tail's rows may then hold records that actor already completed. Whoever
// swaps first fetches; a claimed actor takes its batch from ch.
//
// Each actor has its own handoff, registered in the partition's slot
// (handoffs) while it runs: a batch sent to an actor that has ended is
// dropped with its handoff, and its records are fetched again by the next
// owner.
type handoff struct {
	state atomic.Uint64 // generation<<1 | idle bit
	// done is the delivered batch the idle actor leaves to the tail poll to
	// complete (nil: none); set before idle, read by the tail with the word.
	done atomic.Pointer[tailDone]
	// carrying is held by a tail poll whose statement carries done, from
	// before it reads done until the statement ended; an actor that took
	// its partition back completes done itself only after taking it, so
	// the two never delete the same rows at once (see tailDone).
	carrying sync.Mutex
	// ch carries a claimed batch; its one slot is free whenever the tail
	// claims (the actor empties it before it goes idle again).
	ch chan fetchResult
}

func newHandoff() *handoff { return &handoff{ch: make(chan fetchResult, 1)} }

// idle lets the tail claim the partition (actor).
func (h *handoff) idle() {
	h.state.Store((h.state.Load()>>1+1)<<1 | 1)
}

// reclaim takes the right to fetch back (actor, woken by something else
// than a batch). It returns false if the tail claimed first: its batch is
// then in ch, or about to be.
func (h *handoff) reclaim() bool {
	s := h.state.Load()
	return s&1 == 1 && h.state.CompareAndSwap(s, s&^1)
}

// waiting returns the word to claim with and whether the actor waits
// (tail, before its statement).
func (h *handoff) waiting() (uint64, bool) {
	s := h.state.Load()
	return s, s&1 == 1
}

// claim hands batch over if the actor still waits in the generation read
// by waiting (tail, after its statement); otherwise batch is dropped.
func (h *handoff) claim(word uint64, batch fetchResult) bool {
	if !h.state.CompareAndSwap(word, word&^1) {
		return false
	}
	h.ch <- batch
	return true
}

// handoffs holds the running actor's handoff of each partition (nil while
// none runs here).
type handoffs []atomic.Pointer[handoff]

// A tailDone is a batch the tail poll handed over whose every record was
// delivered, left by its actor, now idle, for the next tail poll to
// complete: the poll's statement deletes its records under the lease fence
// (as a completion does) and fetches the partition's next records in the
// same round trip, instead of the actor running a completion statement of
// its own. At steady load that halves the relay's statements (bench/README,
// "Completions ride the next tail poll"). The actor applies and emits the
// batch's outcomes when the poll hands the result back (fetchResult.done),
// and completes the batch itself if it takes its partition back first
// (a timer, a wake-up, the lease, a stop): deleting the same rows twice is
// harmless, each statement fenced on its own, and only the party that
// holds the right to fetch reports the outcome.
type tailDone struct {
	epoch int64
	ids   []int64 // the delivered records, a copy the actor no longer touches
}
