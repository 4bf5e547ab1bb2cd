-- Image-aware placement (issue 12): the images a node has started sandboxes from lately
-- (a JSON array of image references, at most 32, newest first), refreshed with each
-- heartbeat. Placement prefers, of the two nodes it samples, one that has the image.
ALTER TABLE nodes ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
