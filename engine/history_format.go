package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// A history batch (schema version 6, column history.records) holds the
// records one completion statement delivered, encoded by the relay from the
// records it published, so that PostgreSQL stores one bytea value per batch
// and does no work per record (no RETURNING, no aggregation):
//
//	byte 0         format version, historyFormat (1)
//	then, per record, in any order:
//	  int64        id                   (8 bytes, big-endian, as all integers)
//	  int32        partition
//	  int64        created_at, microseconds since 1970-01-01 00:00 UTC
//	  uint32 + n   key        (length, then UTF-8 bytes)
//	  uint32 + n   topic
//	  uint32 + n   message_id
//	  uint32 + n   metadata   (the stored JSON object's text)
//	  uint32 + n   payload
//
// Every integer is fixed width so that SQL can write and read the format
// (int8send/int4send; the migration from version 5 and the
// history_records function), and records can be appended to a batch
// without re-encoding it. The column is lz4-compressed where the server
// has lz4: a drain of bench drain's 200,000 records (72-byte payloads,
// about 170 bytes each encoded) left 7 MB of history values, 35 bytes a
// record.
const historyFormat = 1

// historyRecord is one record of a history batch.
type historyRecord struct {
	ID        int64
	Partition int
	CreatedAt time.Time
	Key       string
	Topic     string
	MessageID string
	Metadata  string // JSON object text
	Payload   []byte
}

// historyRecordSize is the encoded size of r.
func historyRecordSize(key, topic, messageID, metadata string, payload []byte) int {
	return 8 + 4 + 8 + 5*4 + len(key) + len(topic) + len(messageID) + len(metadata) + len(payload)
}

// appendHistoryRecord appends one record's encoding to dst (which must
// start with the format byte when it is stored).
func appendHistoryRecord(dst []byte, id int64, partition int, createdAt time.Time, key, topic, messageID, metadata string, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(id))
	dst = binary.BigEndian.AppendUint32(dst, uint32(int32(partition)))
	dst = binary.BigEndian.AppendUint64(dst, uint64(createdAt.UnixMicro()))
	for _, s := range [...]string{key, topic, messageID, metadata} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// decodeHistory calls fn for each record of a stored batch, in stored
// order. Strings and payloads are copies; b may be reused afterwards. A
// batch that is not this format, or is cut short, is an error naming the
// offset.
func decodeHistory(b []byte, fn func(historyRecord) error) error {
	if len(b) == 0 || b[0] != historyFormat {
		v := -1
		if len(b) > 0 {
			v = int(b[0])
		}
		return fmt.Errorf("postrelay: history batch: format %d, want %d", v, historyFormat)
	}
	off := 1
	need := func(n int) error {
		if n < 0 || len(b)-off < n {
			return fmt.Errorf("postrelay: history batch: truncated at byte %d of %d (need %d more)", off, len(b), n)
		}
		return nil
	}
	str := func() ([]byte, error) {
		if err := need(4); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(b[off:])
		off += 4
		if n > math.MaxInt32 {
			return nil, fmt.Errorf("postrelay: history batch: length %d at byte %d", n, off-4)
		}
		if err := need(int(n)); err != nil {
			return nil, err
		}
		s := b[off : off+int(n)]
		off += int(n)
		return s, nil
	}
	for off < len(b) {
		if err := need(20); err != nil {
			return err
		}
		r := historyRecord{
			ID:        int64(binary.BigEndian.Uint64(b[off:])),
			Partition: int(int32(binary.BigEndian.Uint32(b[off+8:]))),
			CreatedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(b[off+12:]))).UTC(),
		}
		off += 20
		var fields [5][]byte
		for i := range fields {
			s, err := str()
			if err != nil {
				return err
			}
			fields[i] = s
		}
		r.Key, r.Topic, r.MessageID, r.Metadata = string(fields[0]), string(fields[1]), string(fields[2]), string(fields[3])
		r.Payload = append([]byte{}, fields[4]...)
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
