package actors_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/postrelay/postrelay/actors"
)

func ExampleSupervisor() {
	sup, err := actors.NewSupervisor(actors.SupervisorConfig{
		InitialBackoff: time.Millisecond,
		OnEvent:        func(e actors.Event) { fmt.Println(e.Actor, e.Kind) },
	})
	if err != nil {
		panic(err)
	}
	attempts := 0
	ref := sup.Spawn(context.Background(), "worker", actors.ActorFunc(func(ctx context.Context) error {
		attempts++
		if attempts == 1 {
			return errors.New("transient failure") // restarted after a backoff
		}
		return nil // done: not restarted
	}))
	<-ref.Done()
	fmt.Println("err:", ref.Err())
	if err := sup.Stop(time.Second); err != nil {
		panic(err)
	}
	sup.Wait()
	// Output:
	// worker started
	// worker failed
	// worker restarting
	// worker started
	// worker stopped
	// err: <nil>
}

func ExampleMailbox() {
	ctx := context.Background()
	mb := actors.NewMailbox[string](8)
	_ = mb.Send(ctx, "batch 1")
	_ = mb.Send(ctx, "batch 2")
	_ = mb.SendControl(ctx, "lease lost") // overtakes the queued batches
	for mb.Len() > 0 {
		msg, _ := mb.Receive(ctx)
		fmt.Println(msg)
	}
	// Output:
	// lease lost
	// batch 1
	// batch 2
}

func ExampleWaker() {
	w := actors.NewWaker()
	for range 3 {
		w.Wake() // never blocks
	}
	wakeups := 0
	for {
		select {
		case <-w.C():
			wakeups++
			continue
		default:
		}
		break
	}
	fmt.Println("wake-ups:", wakeups)
	// Output:
	// wake-ups: 1
}
