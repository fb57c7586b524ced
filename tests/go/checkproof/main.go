// Command checkproof checks a pm-ops proof document with Go's own readers of the formats,
// golang.org/x/mod/sumdb/note (the signed note) and golang.org/x/mod/sumdb/tlog (the Merkle
// proofs), so what pm-ops writes is shown to be what the reference implementation reads.
//
//	checkproof inclusion|consistency VERIFIER-KEY < PROOF.json
//
// PROOF.json is shaped as `pm-ops checkpoints prove` / `consistency` print it. The command
// prints "ok" and exits 0, or prints why not and exits 1 (2 for a usage mistake).
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index      int64    `json:"index"`
	TreeSize   int64    `json:"tree_size"`
	Leaf       string   `json:"leaf"`
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

type consistency struct {
	From           int64    `json:"from"`
	To             int64    `json:"to"`
	Proof          []string `json:"proof"`
	FromCheckpoint string   `json:"from_checkpoint"`
	ToCheckpoint   string   `json:"to_checkpoint"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: checkproof inclusion|consistency VERIFIER-KEY < PROOF.json")
		os.Exit(2)
	}
	verifier, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "verifier key:", err)
		os.Exit(2)
	}
	decoder := json.NewDecoder(os.Stdin)
	switch os.Args[1] {
	case "inclusion":
		var doc inclusion
		if err = decoder.Decode(&doc); err == nil {
			err = checkInclusion(doc, verifier)
		}
	case "consistency":
		var doc consistency
		if err = decoder.Decode(&doc); err == nil {
			err = checkConsistency(doc, verifier)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown check", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Println("rejected:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}

func checkInclusion(doc inclusion, verifier note.Verifier) error {
	tree, err := openCheckpoint(doc.Checkpoint, verifier)
	if err != nil {
		return err
	}
	if tree.N != doc.TreeSize {
		return fmt.Errorf("checkpoint size %d, proof size %d", tree.N, doc.TreeSize)
	}
	leaf, err := parseHex(doc.Leaf)
	if err != nil {
		return err
	}
	proof, err := parseHexes(doc.Proof)
	if err != nil {
		return err
	}
	// Our leaf is the event's 32-byte content hash; tlog's record hash is its RFC 6962 leaf hash.
	return tlog.CheckRecord(tlog.RecordProof(proof), tree.N, tree.Hash, doc.Index, tlog.RecordHash(leaf[:]))
}

func checkConsistency(doc consistency, verifier note.Verifier) error {
	from, err := openCheckpoint(doc.FromCheckpoint, verifier)
	if err != nil {
		return err
	}
	to, err := openCheckpoint(doc.ToCheckpoint, verifier)
	if err != nil {
		return err
	}
	if from.N != doc.From || to.N != doc.To {
		return errors.New("the checkpoints' sizes are not the proof's")
	}
	proof, err := parseHexes(doc.Proof)
	if err != nil {
		return err
	}
	return tlog.CheckTree(tlog.TreeProof(proof), to.N, to.Hash, from.N, from.Hash)
}

// openCheckpoint checks the note's signature with note.Open and reads its C2SP checkpoint
// body (tlog.ParseTree knows only the go.sum database's own origin line).
func openCheckpoint(msg string, verifier note.Verifier) (tlog.Tree, error) {
	n, err := note.Open([]byte(msg), note.VerifierList(verifier))
	if err != nil {
		return tlog.Tree{}, err
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return tlog.Tree{}, errors.New("checkpoint has fewer than three lines")
	}
	if lines[0] != verifier.Name() {
		return tlog.Tree{}, fmt.Errorf("checkpoint origin %q is not the key's name", lines[0])
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return tlog.Tree{}, errors.New("malformed checkpoint size")
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return tlog.Tree{}, err
	}
	return tlog.Tree{N: size, Hash: hash}, nil
}

func parseHex(text string) (tlog.Hash, error) {
	var hash tlog.Hash
	raw, err := hex.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		return hash, fmt.Errorf("malformed hash %q", text)
	}
	copy(hash[:], raw)
	return hash, nil
}

func parseHexes(texts []string) ([]tlog.Hash, error) {
	hashes := make([]tlog.Hash, len(texts))
	for i, text := range texts {
		hash, err := parseHex(text)
		if err != nil {
			return nil, err
		}
		hashes[i] = hash
	}
	return hashes, nil
}
