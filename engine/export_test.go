package engine

// HistoryRecord is a record of a history batch (history_format.go), for
// the tests of package engine_test.
type HistoryRecord = historyRecord

// EncodeHistory encodes records, in this order, into a history batch of
// format 1, as the relay stores it in history.records.
func EncodeHistory(recs ...HistoryRecord) []byte {
	b := []byte{historyFormat}
	for _, r := range recs {
		b = appendHistoryRecord(b, r.ID, r.Partition, r.CreatedAt, r.Key, r.Topic, r.MessageID, r.Metadata, r.Payload)
	}
	return b
}

// DecodeHistory decodes a history batch into its records.
func DecodeHistory(b []byte) ([]HistoryRecord, error) {
	var recs []HistoryRecord
	err := decodeHistory(b, func(r historyRecord) error {
		recs = append(recs, r)
		return nil
	})
	return recs, err
}
