package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/postrelay/postrelay/actors"
)

// coordinatorConfig is the part of Config the coordinator reads.
type coordinatorConfig struct {
	instance    string
	heartbeat   time.Duration
	leaseTTL    time.Duration
	stopTimeout time.Duration
	logger      *slog.Logger
}

func coordinatorConfigFrom(c Config) coordinatorConfig {
	return coordinatorConfig{
		instance:    c.InstanceID,
		heartbeat:   c.HeartbeatInterval,
		leaseTTL:    c.LeaseTTL,
		stopTimeout: c.StopTimeout,
		logger:      c.Logger,
	}
}

// coordinatorDeps is what the coordinator uses, built by Engine.Run.
type coordinatorDeps struct {
	cfg coordinatorConfig
	// store runs the membership and lease statements.
	store *store
	// partitions is the schema's partition count.
	partitions int
	// emit hands an event to Engine.Events and the Observer.
	emit func(Event)
	// supervisor configures the supervisor of the partition actors.
	supervisor actors.SupervisorConfig
	// partition is what every partition actor gets.
	partition *partitionDeps
	// wakers wakes each partition's actor, by partition.
	wakers []*actors.Waker
}

// coordMsg is what the coordinator's mailbox carries: the exit of one of its
// partition actors, delivered by actors.Watch.
type coordMsg struct {
	exit actors.Exit
}

// held is a partition this instance holds a lease on.
type held struct {
	epoch    int64
	ref      *actors.TypedRef[leaseMsg]
	stopping bool
	stopAt   time.Time // when the stop was asked
	release  bool      // stopping on purpose: release the lease once stopped
	lost     bool      // EventLeaseLost was emitted
}

// coordinator heartbeats, computes the assignment, and acquires, renews and
// releases leases, starting and stopping the partition actors it supervises.
// See doc.go for the lease state diagram and the fencing rules. A
// coordinator serves once: a restart builds a new one, with a new
// supervisor for its partition actors.
type coordinator struct {
	d       coordinatorDeps
	parts   *actors.Supervisor // the partition actors
	mailbox *actors.Mailbox[coordMsg]
	held    map[int]*held
	live    []string
	ticks   int
	host    string
}

func newCoordinator(d coordinatorDeps) *coordinator {
	host, _ := os.Hostname()
	return &coordinator{
		d:       d,
		mailbox: actors.NewMailbox[coordMsg](1), // exits come on the control lane
		held:    make(map[int]*held),
		host:    host,
	}
}

// Serve runs the coordination loop until ctx ends, then stops every
// partition actor, releases the leases at once and removes the instance.
func (c *coordinator) Serve(ctx context.Context) error {
	parts, err := actors.NewSupervisor(c.d.supervisor)
	if err != nil {
		return fmt.Errorf("%w: postrelay: coordinator: %w", actors.ErrDoNotRestart, err)
	}
	c.parts = parts
	defer c.shutdown(ctx)
	ticker := time.NewTicker(c.d.cfg.heartbeat)
	defer ticker.Stop()
	c.tick(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			c.tick(ctx)
		case <-c.mailbox.Ready():
			for m, ok := c.mailbox.TryReceive(); ok; m, ok = c.mailbox.TryReceive() {
				c.handleExit(ctx, m.exit)
			}
		}
	}
}

// tick is one heartbeat: register, renew what is held, read the live
// instances, give up what is no longer ours, take what is, and now and then
// forget long-dead instances. A database error ends the tick early; the
// next one starts over.
func (c *coordinator) tick(ctx context.Context) {
	// The lease deadline renewals give the actors: the local time the
	// renewal was sent (or earlier) plus the TTL; the database sets
	// lease_until from a later now().
	deadline := time.Now().Add(c.d.cfg.leaseTTL)
	if !c.heartbeat(ctx) || !c.renew(ctx, deadline) {
		return
	}
	live, ok := c.liveInstances(ctx)
	if !ok {
		return
	}
	desired := assign(c.d.cfg.instance, live, c.d.partitions)
	c.releaseUnwanted(desired)
	c.releaseOverdue(ctx)
	if !c.acquire(ctx, desired) {
		return
	}
	c.reap(ctx)
}

// warn logs a failed statement unless the coordinator is stopping.
func (c *coordinator) warn(ctx context.Context, msg string, err error, args ...any) {
	if ctx.Err() == nil {
		c.d.cfg.logger.Warn(msg, append([]any{"error", err}, args...)...)
	}
}

func (c *coordinator) heartbeat(ctx context.Context) bool {
	if err := c.d.store.heartbeat(ctx, c.d.cfg.instance, c.host, os.Getpid()); err != nil {
		c.warn(ctx, "postrelay: coordinator heartbeat failed", err)
		return false
	}
	return true
}

// renew extends every lease held, including those whose actor is stopping,
// and tells each actor its new deadline. A lease that was not renewed is
// lost: someone else holds it now, or it was reset.
func (c *coordinator) renew(ctx context.Context, deadline time.Time) bool {
	if len(c.held) == 0 {
		return true
	}
	ps := make([]int32, 0, len(c.held))
	epochs := make([]int64, 0, len(c.held))
	for p, h := range c.held {
		ps = append(ps, int32(p))
		epochs = append(epochs, h.epoch)
	}
	renewed, err := c.d.store.renew(ctx, c.d.cfg.instance, c.d.cfg.leaseTTL, ps, epochs)
	if err != nil {
		c.warn(ctx, "postrelay: coordinator lease renewal failed", err)
		return false
	}
	for p, h := range c.held {
		if renewed[p] {
			h.ref.TrySend(leaseMsg{deadline: deadline})
			continue
		}
		// The actor must not commit anything more (the fence would stop
		// it too). It is told once, without waiting on its mailbox: a
		// stuck actor must not stall the heartbeats.
		if !h.lost {
			c.d.cfg.logger.Warn("postrelay: coordinator found partition lease lost", "partition", p, "epoch", h.epoch)
			c.lost(p, h, nil)
			h.ref.TrySendControl(leaseMsg{lost: true})
		}
		if !h.stopping {
			c.stop(h, false)
		}
	}
	return true
}

func (c *coordinator) liveInstances(ctx context.Context) ([]string, bool) {
	live, err := c.d.store.liveInstances(ctx, c.d.cfg.leaseTTL)
	if err != nil {
		c.warn(ctx, "postrelay: coordinator reading instances failed", err)
		return nil, false
	}
	if !slices.Equal(live, c.live) {
		c.live = live
		e := c.event(EventInstancesChanged)
		e.Count = len(live)
		c.d.emit(e)
		c.d.cfg.logger.Info("postrelay: coordinator live instances changed", "live_instances", len(live))
	}
	return live, true
}

// releaseUnwanted stops the actors of partitions that belong to someone
// else now; each lease is released once its actor has exited.
func (c *coordinator) releaseUnwanted(desired []int) {
	want := make(map[int]bool, len(desired))
	for _, p := range desired {
		want[p] = true
	}
	for p, h := range c.held {
		if !want[p] && !h.stopping {
			c.stop(h, true)
		}
	}
}

// releaseOverdue releases the leases of actors that were asked to stop for
// a release more than StopTimeout ago and have not exited yet (a publish
// that ignores its context): the fence keeps them from completing anything
// once another instance holds the lease.
func (c *coordinator) releaseOverdue(ctx context.Context) {
	for p, h := range c.held {
		if h.release && time.Since(h.stopAt) >= c.d.cfg.stopTimeout {
			c.d.cfg.logger.Warn("postrelay: partition actor did not stop in time, releasing its lease anyway", "partition", p, "epoch", h.epoch)
			c.release(ctx, p, h)
		}
	}
}

// acquire takes the desired partitions that are free or expired and starts
// their actors.
func (c *coordinator) acquire(ctx context.Context, desired []int) bool {
	var missing []int32
	for _, p := range desired {
		if _, ok := c.held[p]; !ok {
			missing = append(missing, int32(p))
		}
	}
	if len(missing) == 0 {
		return true
	}
	got, err := c.d.store.acquire(ctx, c.d.cfg.instance, c.d.cfg.leaseTTL, missing)
	if err != nil {
		c.warn(ctx, "postrelay: coordinator lease acquisition failed", err)
		return false
	}
	for p, epoch := range got {
		c.start(ctx, p, epoch)
	}
	return true
}

// reap forgets long-dead instances, every hundredth tick.
func (c *coordinator) reap(ctx context.Context) {
	c.ticks++
	if c.ticks%100 != 0 {
		return
	}
	if err := c.d.store.reapInstances(ctx, 10*c.d.cfg.leaseTTL); err != nil {
		c.warn(ctx, "postrelay: coordinator reaping instances failed", err)
	}
}

func (c *coordinator) event(kind EventKind) Event {
	return Event{Kind: kind, Time: time.Now(), Instance: c.d.cfg.instance}
}

// start starts the actor of a partition just acquired, bound to its epoch,
// and watches it: its exit comes back as a message in the coordinator's
// mailbox. The actor reads the lease itself when it starts (and again on
// every restart); it learns of renewals from the coordinator's messages.
func (c *coordinator) start(ctx context.Context, p int, epoch int64) {
	e := c.event(EventLeaseAcquired)
	e.Partition, e.Epoch = p, epoch
	c.d.emit(e)
	c.d.cfg.logger.Debug("postrelay: coordinator acquired partition", "partition", p, "epoch", epoch)
	deps, waker := c.d.partition, c.d.wakers[p]
	ref := actors.SpawnTyped(ctx, c.parts, "partition-"+itoa(p), 1, func(mb *actors.Mailbox[leaseMsg]) actors.Actor {
		return newPartitionActor(deps, p, epoch, mb, waker)
	})
	actors.Watch(ctx, ref.Ref, c.mailbox, func(x actors.Exit) coordMsg { return coordMsg{exit: x} })
	c.held[p] = &held{epoch: epoch, ref: ref}
	waker.Wake()
}

// stop asks a partition actor to stop without waiting for it (a slow
// publish must never delay heartbeats); its exit arrives as a message.
func (c *coordinator) stop(h *held, release bool) {
	h.stopping, h.release, h.stopAt = true, release, time.Now()
	h.ref.Cancel()
}

// lost emits EventLeaseLost for a held partition, once.
func (c *coordinator) lost(p int, h *held, err error) {
	if h.lost {
		return
	}
	h.lost = true
	e := c.event(EventLeaseLost)
	e.Partition, e.Epoch, e.Err = p, h.epoch, err
	c.d.emit(e)
}

// release gives a partition's lease up and forgets it. Each lease ends with
// one event: EventLeaseReleased, unless EventLeaseLost came first.
func (c *coordinator) release(ctx context.Context, p int, h *held) {
	if err := c.d.store.release(ctx, c.d.cfg.instance, p, h.epoch); err != nil {
		c.warn(ctx, "postrelay: coordinator lease release failed", err, "partition", p)
	}
	delete(c.held, p)
	if h.lost {
		return // EventLeaseLost already ended this lease
	}
	e := c.event(EventLeaseReleased)
	e.Partition, e.Epoch = p, h.epoch
	c.d.emit(e)
}

// handleExit handles a partition actor's exit.
func (c *coordinator) handleExit(ctx context.Context, x actors.Exit) {
	if ctx.Err() != nil {
		// Stopping: the actors exit because the coordinator's own context
		// ended, and shutdown releases their leases. Not a loss.
		return
	}
	p, h := c.find(x.Ref)
	if h == nil {
		return // an actor whose lease was already released or forgotten
	}
	if h.release {
		c.release(ctx, p, h)
		return
	}
	// The actor ended by itself: the lease is lost (fenced) or it was
	// stopped after a failed renewal. Forget the partition; the next tick
	// acquires it again if it is still ours and free.
	delete(c.held, p)
	c.lost(p, h, x.Err)
	if x.Err != nil && !errors.Is(x.Err, ErrLeaseLost) {
		c.d.cfg.logger.Warn("postrelay: partition actor ended", "partition", p, "error", x.Err)
	}
}

// find returns the held partition whose actor is r.
func (c *coordinator) find(r *actors.Ref) (int, *held) {
	for p, h := range c.held {
		if h.ref.Ref == r {
			return p, h
		}
	}
	return 0, nil
}

// shutdown stops every partition actor (each completes the batch it
// published), then releases all leases at once so other instances take over
// without waiting for the TTL, and removes the instance row.
func (c *coordinator) shutdown(ctx context.Context) {
	cfg := c.d.cfg
	if err := c.parts.Stop(cfg.stopTimeout); err == nil {
		c.parts.Wait()
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.stopTimeout)
	defer cancel()
	if err := c.d.store.releaseAll(bg, cfg.instance); err != nil {
		cfg.logger.Warn("postrelay: coordinator releasing leases on shutdown failed", "error", err)
	}
	for p, h := range c.held {
		if h.lost {
			continue
		}
		e := c.event(EventLeaseReleased)
		e.Partition, e.Epoch = p, h.epoch
		c.d.emit(e)
	}
	clear(c.held)
	if err := c.d.store.deleteInstance(bg, cfg.instance); err != nil {
		cfg.logger.Warn("postrelay: coordinator removing instance failed", "error", err)
	}
}
