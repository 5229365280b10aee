-- postrelay schema, version 4: dead letters indexed by message id.
--
-- The console looks a record up by its message id. Dead letters are
-- written only when a record fails for good or an operator moves it (off
-- the relay's delivery path), so an index here costs nothing measurable;
-- records gets none (every application write would pay for it, see the
-- README's console section).

CREATE INDEX dead_letters_message_id ON {{schema}}.dead_letters (message_id);
